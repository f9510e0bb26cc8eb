"""The codec server's rendering and its HTTP protocol, on real payloads and a real server.

What the Web UI and ``temporal workflow show`` see end to end is in tests/e2e/test_codec.py;
here: each kind of value, the user's modules never imported, their methods never run, the
bounds, and the protocol (CORS for the UI's origin only, other sites refused, proto3 JSON).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import default

from apothic._codec._render import NO_KEY, decode_payload, render_tree
from apothic._codec._server import CodecServer, start, ui_origins
from apothic._codec._values import MAX_ITEMS
from apothic._contracts import ExecuteInput, InvocationInput
from apothic._data._serialization import CloudPickled
from apothic._data._signing import SIGNATURE, PayloadKey, SigningCodec

from ..conftest import ROOT, free_port

UI = "http://127.0.0.1:8233"
CODEC = SigningCodec(PayloadKey(secrets.token_bytes(32), "this test's key"))


def payload_of(value: object) -> Payload:
    """``value`` as this control plane's processes send it: JSON, signed."""
    return CODEC.sign(default().payload_converter.to_payloads([value])[0])


def decoded(value: object) -> object:
    out = decode_payload(payload_of(value), CODEC.verify)
    assert dict(out.metadata) == {"encoding": b"json/plain"}  # the signature is left out
    return json.loads(out.data)


def script_class() -> type:
    """A class as a user's script defines it: cloudpickle ships it by value (no module to import)."""

    @dataclasses.dataclass
    class Order:
        sku: str
        qty: int

        def __repr__(self) -> str:  # the codec server must never call it
            raise AssertionError("the codec server ran the value's own __repr__")

    return Order


def test_arguments_render_as_json_inside_the_control_data() -> None:
    Order = script_class()
    args = CloudPickled.dump(((Order("apple", 3), [1.5, None]), {"express": True}), kind="args", qualname="shop.total")
    shown = decoded(InvocationInput(job_id="job-1", app="shop", function="total", args=args))
    assert shown["job_id"] == "job-1" and shown["app"] == "shop"  # the control data stays as it was
    assert shown["args"] == {
        "cloudpickle": "args", "function": "shop.total", "size": args.size, "sha256": args.sha256,
        "args": [{"$type": f"{__name__}.{Order.__qualname__}", "fields": {"sku": "apple", "qty": 3}}, [1.5, None]],
        "kwargs": {"express": True},
    }


def test_results_errors_and_checkpoints_show_type_and_size() -> None:
    result = CloudPickled.dump({"total": 4.5, "items": ("a", "b")}, kind="result")
    assert render_tree(dataclasses.asdict(result)) == {
        "cloudpickle": "result", "type": "dict", "size": result.size, "sha256": result.sha256,
        "value": {"total": 4.5, "items": ["a", "b"]},
    }
    error = CloudPickled.dump(KeyError("sku-9"), kind="exception")
    details = render_tree({"exc": dataclasses.asdict(error), "type": "KeyError", "traceback": "Traceback ..."})
    assert details["exc"]["value"] == {"$type": "KeyError", "message": "sku-9"}
    two = render_tree(dataclasses.asdict(CloudPickled.dump(ValueError("bad sku", 9), kind="exception")))
    assert two["value"] == {"$type": "ValueError", "message": "('bad sku', 9)", "args": ["bad sku", 9]}
    assert details["traceback"] == "Traceback ..."
    checkpoint = CloudPickled.dump({"epoch": 7}, kind="checkpoint")
    inp = ExecuteInput(job_id="job-2", function="train", version=1, args=CloudPickled.dump(((), {}), kind="args"),
                       timeout_s=60, checkpoint=checkpoint)
    shown = decoded(inp)
    assert shown["checkpoint"]["cloudpickle"] == "checkpoint" and shown["checkpoint"]["value"] == {"epoch": 7}
    assert shown["args"]["args"] == [] and shown["args"]["kwargs"] == {}


def test_blob_references_and_code_are_described_not_loaded() -> None:
    ref = dataclasses.replace(CloudPickled.dump(b"x", kind="result"), data="", size=52_428_800,
                              blob={"driver": "apothic-local", "key": "v0/d/sha256/ab", "hash_value": "ab"})
    assert render_tree(dataclasses.asdict(ref)) == {
        "cloudpickle": "result", "type": "bytes", "size": 52_428_800, "sha256": ref.sha256,
        "blob": {"driver": "apothic-local", "key": "v0/d/sha256/ab"},
        "note": "in the blob store: not read by the codec server",
    }
    code = CloudPickled.dump(lambda: 1, kind="code", qualname="shop.total")
    shown = render_tree(dataclasses.asdict(code))
    assert "value" not in shown and shown["note"] == "the app's code: the codec server does not unpickle code"


def test_a_type_of_the_users_own_module_is_not_imported(tmp_path: Path) -> None:
    """A value whose class lives in the user's module (pickled by reference) is named, not loaded:
    importing the module would run its code in the codec server."""
    (tmp_path / "inventory.py").write_text(textwrap.dedent("""\
        import pathlib
        pathlib.Path(__file__).with_name("imported").write_text("the module's code ran")

        class Item:
            def __init__(self, n):
                self.n = n
        """))
    script = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import inventory, base64\n"
              "from apothic._data._serialization import CloudPickled\n"
              "print(CloudPickled.dump(inventory.Item(3), kind='result').data)")
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "imported").unlink()
    node = dataclasses.asdict(CloudPickled.from_bytes(base64.b64decode(data), kind="result", qualname="Item"))
    sys.path.insert(0, str(tmp_path))
    try:
        shown = render_tree(node)
    finally:
        sys.path.remove(str(tmp_path))
    assert "value" not in shown
    assert shown["not_loaded"].startswith("its type inventory.Item is defined in the user's module 'inventory'")
    assert not (tmp_path / "imported").exists() and "inventory" not in sys.modules


def test_a_pickle_of_another_python_or_broken_bytes_is_said_so() -> None:
    other = dataclasses.replace(CloudPickled.dump(1, kind="result"), py="3.99")
    assert "pickled by Python 3.99" in render_tree(dataclasses.asdict(other))["not_loaded"]
    broken = dataclasses.replace(CloudPickled.dump(1, kind="result"), data=base64.b64encode(b"\x80\x05junk").decode())
    assert render_tree(dataclasses.asdict(broken))["not_loaded"].startswith("unpickling failed in the codec server")


def test_large_values_are_bounded_and_marked() -> None:
    value = {"rows": list(range(10 * MAX_ITEMS)), "text": "y" * 10_000}
    shown = render_tree(dataclasses.asdict(CloudPickled.dump(value, kind="result")))
    assert len(shown["value"]["rows"]) == MAX_ITEMS + 1 and shown["value"]["rows"][-1] == f"... {9 * MAX_ITEMS} more items"
    assert len(shown["value"]["text"]) < 2100 and shown["value"]["text"].endswith("[8000 more characters]")
    assert "truncated" in shown


def test_values_are_unpickled_only_from_payloads_this_control_plane_signed() -> None:
    """What the server did not get from a process with the key (a signal typed into the UI, a
    forged payload, a payload of another control plane) shows its structure, never its values."""
    value = {"value": CloudPickled.dump([1, 2], kind="result")}
    unsigned = default().payload_converter.to_payloads([value])[0]
    other = SigningCodec(PayloadKey(secrets.token_bytes(32), "another key")).sign(unsigned)
    forged = payload_of(value)
    forged.data = forged.data + b" "  # changed after signing (still the same JSON)
    for payload, why in ((unsigned, "the payload is not signed"), (other, "signature does not match"),
                         (forged, "signature does not match")):
        shown = json.loads(decode_payload(payload, CODEC.verify).data)["value"]
        assert "value" not in shown and why in shown["not_loaded"], shown
    no_key = json.loads(decode_payload(payload_of(value)).data)["value"]
    assert no_key["not_loaded"] == f"not unpickled: {NO_KEY}" and no_key["size"] == value["value"].size


def test_other_payloads_pass_unchanged_but_for_the_signature() -> None:
    binary = Payload(metadata={"encoding": b"binary/plain", "other": b"kept"}, data=b"\x00\x01")
    out = decode_payload(CODEC.sign(binary), CODEC.verify)
    assert SIGNATURE not in out.metadata and out == binary


@pytest.fixture
def server() -> Iterator[CodecServer]:
    s = start("127.0.0.1", free_port(), ui_origins("127.0.0.1", 8233), CODEC.verify)
    try:
        yield s
    finally:
        s.shutdown()
        s.server_close()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wire(*payloads: Payload) -> bytes:
    return json.dumps({"payloads": [
        {"metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
         "data": base64.b64encode(p.data).decode()} for p in payloads]}).encode()


def test_decode_and_encode_speak_the_remote_codec_protocol(server: CodecServer) -> None:
    result = payload_of({"value": CloudPickled.dump([1, 2], kind="result")})
    status, headers, body = post(server.url + "/decode", wire(result),
                                 {"Content-Type": "application/json", "Origin": UI, "X-Namespace": "default"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == UI
    (answer,) = json.loads(body)["payloads"]
    assert base64.b64decode(answer["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(answer["data"]))["value"]["value"] == [1, 2]
    # Under a prefix, as a proxy may mount it; encode answers the payloads as they came.
    status, _, body = post(server.url + "/default/encode", wire(result), {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body) == json.loads(wire(result))


def test_only_the_web_uis_origin_is_served(server: CodecServer) -> None:
    preflight = urllib.request.Request(server.url + "/decode", method="OPTIONS", headers={
        "Origin": "http://localhost:8233", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace"})
    with urllib.request.urlopen(preflight, timeout=10) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:8233"
        assert "x-namespace" in r.headers["Access-Control-Allow-Headers"]
    # Another site's page cannot make the server unpickle what it sends, with or without a preflight.
    body = wire(payload_of({"value": CloudPickled.dump(1, kind="result")}))
    status, headers, text = post(server.url + "/decode", body, {"Content-Type": "application/json",
                                                                "Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers and b"evil.example" in text
    status, _, _ = post(server.url + "/decode", body, {"Content-Type": "text/plain"})
    assert status == 415
    status, _, text = post(server.url + "/decode", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and b"proto3 JSON" in text


def test_the_command_refuses_a_bad_port_and_a_taken_one() -> None:
    bad = subprocess.run([sys.executable, "-m", "apothic", "codec-server", "--port", "70000"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert bad.returncode == 1 and "--port=70000: allowed: an integer from 1 to 65535" in bad.stderr
    with CodecServer(("127.0.0.1", 0), []) as taken:
        port = taken.server_address[1]
        busy = subprocess.run([sys.executable, "-m", "apothic._codec", "--port", str(port)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert busy.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in busy.stderr
