"""Generated functions (``@apothic.liv``) against a local OpenAI-compatible server.

One dev server, control worker and scripted model server for the module (``tests/livmodel.py``:
a real HTTP server whose answers each test scripts under a model name of its own). The worker
holds a model API key; the last test searches every history, memo and file of the namespace and
of ``APOTHIC_HOME`` for it. Generated code runs in the functions' process containers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apothic.workflows._liv import LivWorkflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

import apothic
from apothic import App, ControlPlaneClient, LivError, NotFoundError, RemoteFunction
from apothic._contracts import LivProgress
from apothic._control._loop import run_blocking
from apothic._liv._show import read_record, render

from ..conftest import ROOT, free_port, read_if_there, start_dev_server, start_worker, stop
from ..livmodel import ModelServer, Reply
from .test_secrets import forms

GOOD = '''
def normalize_status(status: str) -> str:
    """Return exactly `status:` followed by the lowercase input stripped of outer whitespace."""
    return "status:" + status.strip().lower()
'''


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.key = f"sk-test-{secrets.token_hex(16)}"
        self.model = ModelServer().start()
        # The session's APOTHIC_HOME (this process's): what it keeps there (payload key, caches) is shared.
        self.home = Path(os.environ["APOTHIC_HOME"])
        self.env = dict(os.environ, APOTHIC_TEMPORAL_ADDRESS=self.address,
                        APOTHIC_LIV_BASE_URL=self.model.base_url, APOTHIC_LIV_MODEL="default-model",
                        APOTHIC_LIV_API_KEY=self.key, APOTHIC_LIV_TIMEOUT_S="20")
        self.server = start_dev_server(tmp / "temporal.db", self.port)
        self.worker = self.start_worker()
        self.client = ControlPlaneClient(self.address)

    def start_worker(self, env: dict[str, str] | None = None, name: str = "worker.log"):
        return start_worker(env or self.env, self.tmp / "logs" / name)

    def app(self, name: str) -> App:
        return App(name, client=self.client)

    def temporal(self, fn: Any) -> Any:
        async def main() -> Any:
            return await fn(await Client.connect(self.address))

        return asyncio.run(main())

    def close(self) -> None:
        stop(self.worker)
        stop(self.server)
        self.model.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, temporal: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("liv-home")
    (tmp / "logs").mkdir()
    w = World(tmp)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def model() -> str:
    return f"scripted-{uuid.uuid4().hex[:8]}"


def stub_app(world: World, name: str, model: str, timeout_s: int = 30, **liv: Any) -> tuple[App, Any]:
    app = world.app(name)

    @apothic.liv(model=model, **liv)
    @app.function(timeout_s=timeout_s)
    def normalize_status(status: str) -> str:
        """Return exactly `status:` followed by the lowercase input stripped of outer whitespace."""
        raise NotImplementedError

    return app, normalize_status


def history_json(world: World, workflow_id: str) -> str:
    async def fetch(client: Client) -> str:
        return (await client.get_workflow_handle(workflow_id).fetch_history()).to_json()

    return world.temporal(fetch)


def test_self_debug_sends_failures_back_until_the_examples_pass(world: World, app_name: str, model: str) -> None:
    wrong = GOOD.replace('"status:" + status.strip().lower()', "status.lower()")
    raising = GOOD.replace('    return "status:" + status.strip().lower()',
                           '    if status.strip() == "Done":\n        raise ValueError("no such status: " + status)\n'
                           '    return "status:" + status.strip().lower()')
    world.model.script(model, Reply.code(wrong), Reply.code(raising), Reply.code(GOOD))
    app, fn = stub_app(world, app_name, model, self_debug=True,
                       examples=[((" READY ",), {}, "status:ready"), (("Done",), {})])
    deployed = app.deploy()
    assert (deployed.version, deployed.created) == (1, True)
    assert fn.remote("  Hello ") == "status:hello"  # the frozen code, in the function's container

    asked = world.model.requests_for(model)
    assert len(asked) == 3
    assert all(r.headers.get("Authorization") == f"Bearer {world.key}" for r in asked)
    assert "Return exactly `status:`" in asked[0].last_user and "normalize_status(' READY ') returns 'status:ready'" \
        in asked[0].last_user and "raise NotImplementedError" in asked[0].last_user and "@app.function" not in \
        asked[0].last_user
    # Round 1's answer ran and returned the wrong value; round 2's raised in the generated code.
    assert "normalize_status(' READY ') returned ' ready '; expected 'status:ready'" in asked[1].last_user
    second = asked[2].last_user
    assert "example 2: normalize_status('Done')" in second and "ValueError: no such status: Done" in second
    assert f'File "<apothic-liv {app_name}.normalize_status>"' in second
    assert 'raise ValueError("no such status: " + status)' in second  # the generated line, in the traceback
    assert asked[2].messages[-2]["role"] == "assistant"

    record = fn._apothic_liv_frozen.record
    assert (record.model, record.round, record.rounds, record.cache_hit, record.examples_run) == (model, 3, 3, False, 2)
    assert record.source.strip() == GOOD.strip()

    async def progress(client: Client) -> LivProgress:
        return await client.get_workflow_handle(record.workflow_id).query("progress", result_type=LivProgress)

    rounds = world.temporal(progress).rounds
    assert [r.outcome for r in rounds] == ["examples failed", "examples failed", "passed"]
    history = json.loads(history_json(world, record.workflow_id))
    children = [e for e in history["events"] if e.get("eventType") == "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED"]
    assert len(children) == 6  # two examples a round, each a job of that round's candidate
    replayer = Replayer(workflows=[LivWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
    replayed = asyncio.run(replayer.replay_workflow(
        WorkflowHistory.from_json(record.workflow_id, history_json(world, record.workflow_id)),
        raise_on_replay_failure=False))
    assert replayed.replay_failure is None, replayed.replay_failure

    async def candidate_state(client: Client) -> Any:
        return (await client.get_workflow_handle(f"apothic-app:{candidate_of(history)}").describe()).status

    assert world.temporal(candidate_state).name == "COMPLETED"  # removed once the generation ended

    # `apothic liv show` prints the frozen code and where it came from.
    version, shown = run_blocking(read_record(app_name, "normalize_status", settings=world.client.settings))
    text = render(app_name, "normalize_status", version, shown)
    assert f"generated by {model}, round 3 of at most 3" in text and "cache: miss" in text
    assert "2 example(s) ran as jobs and passed" in text and GOOD.strip() in text

    # Unchanged: no model call, no new version. Another app: the account cache, no model call.
    again = app.deploy()
    assert (again.version, again.created) == (1, False)
    other, other_fn = stub_app(world, f"{app_name}-b", model, self_debug=True,
                               examples=[((" READY ",), {}, "status:ready"), (("Done",), {})])
    other.deploy()
    assert other_fn.remote("X") == "status:x"
    assert len(world.model.requests_for(model)) == 3
    hit = other_fn._apothic_liv_frozen.record
    assert hit.cache_hit and hit.app == app_name and hit.source == record.source
    version, shown = run_blocking(read_record(other.name, "normalize_status", settings=world.client.settings))
    assert f"cache: hit (account cache: generated for {app_name}.normalize_status" in render(other.name, "x", 1, shown)


def candidate_of(history: dict[str, Any]) -> str:
    """The candidate app the examples' jobs of a generation ran on (from its first child's input)."""
    for e in history["events"]:
        attrs = e.get("startChildWorkflowExecutionInitiatedEventAttributes")
        if attrs:
            return json.loads(base64.b64decode(attrs["input"]["payloads"][0]["data"]))["app"]
    raise AssertionError("no child workflow")


def test_a_rate_limit_and_a_malformed_answer_are_survived(world: World, app_name: str, model: str) -> None:
    echo = f"// key {world.key}"
    world.model.script(
        model,
        Reply.error(429, f"slow down, {world.key}", headers={"Retry-After": "1"}),
        Reply.code("def normalize_status(status: str) -> str\n    return status"),  # no colon: does not parse
        Reply.code(GOOD.replace('    """Return', f'    # {echo}\n    """Return')),
    )
    app, fn = stub_app(world, app_name, model, cache="none", examples=[((" READY ",), {}, "status:ready")])
    app.deploy()
    assert fn.remote("Up") == "status:up"
    asked = world.model.requests_for(model)
    assert len(asked) == 3
    assert "the code does not parse: line 1" in asked[2].last_user
    record = fn._apothic_liv_frozen.record
    assert record.round == 2 and record.scope == "none" and not record.self_debug
    assert world.key not in record.source and "<secret>" in record.source  # what the server sent, blanked
    events = json.loads(history_json(world, record.workflow_id))["events"]
    attempts = [e["activityTaskStartedEventAttributes"]["attempt"] for e in events
                if e.get("eventType") == "EVENT_TYPE_ACTIVITY_TASK_STARTED"]
    assert 2 in attempts  # the 429 was retried by the activity's policy
    assert not (world.home / "liv" / "account" / f"{record.key}.json").exists()  # cache="none" keeps nothing


def test_an_example_past_its_timeout_goes_back_to_the_model(world: World, app_name: str, model: str) -> None:
    slow = GOOD.replace('    return "status:"', '    import time\n    time.sleep(30)\n    return "status:"')
    world.model.script(model, Reply.code(slow), Reply.code(GOOD))
    app, fn = stub_app(world, app_name, model, timeout_s=2, self_debug=True, examples=[(("a",), {}, "status:a")])
    app.deploy()
    told = world.model.requests_for(model)[1].last_user
    assert "example 1: normalize_status('a') (expected 'status:a') did not finish" in told and "2" in told
    assert fn._apothic_liv_frozen.record.round == 2


def test_the_last_failing_round_fails_the_deploy_and_deploys_nothing(world: World, app_name: str, model: str) -> None:
    wrong = GOOD.replace('"status:" + status.strip().lower()', "status.upper()")
    world.model.script(model, Reply.code(wrong), Reply.code(wrong))
    app, _ = stub_app(world, app_name, model, self_debug=True, rounds=2, examples=[(("ok",), {}, "status:ok")])
    with pytest.raises(LivError) as info:
        app.deploy()
    text = str(info.value)
    assert "still failed after 2 round(s)" in text and "returned 'OK'; expected 'status:ok'" in text
    assert "return status.upper()" in text and "Fix: " in text
    assert "return status.upper()" in info.value.code and info.value.rounds == 2
    with pytest.raises(NotFoundError, match="is not deployed"):
        RemoteFunction.from_name(app_name, "normalize_status", client=world.client).remote("x")


def test_a_body_that_is_not_a_chat_completion_fails_with_the_fix(world: World, app_name: str, model: str) -> None:
    world.model.script(model, Reply.raw(b"<html>gateway says hi</html>"))
    app, _ = stub_app(world, app_name, model)
    with pytest.raises(LivError) as info:
        app.deploy()
    text = str(info.value)
    assert "is not a chat completion" in text and "gateway says hi" in text and "Fix: point APOTHIC_LIV_BASE_URL" in text
    assert len(world.model.requests_for(model)) == 1  # not retried: another try would get the same


@pytest.mark.parametrize("case", ["no endpoint", "unreachable"])
def test_a_misconfigured_control_worker_fails_the_deploy_with_the_fix(
    world: World, app_name: str, model: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of its own (own task queue): without a base URL, or one where nothing listens."""
    config = yaml.safe_load((ROOT / "temporal-dev.yaml").read_text())
    config["worker"]["control_task_queue"] = f"liv-{case.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "temporal-dev.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in world.env.items() if not k.startswith("APOTHIC_LIV_")}
    env.update(APOTHIC_CONFIG=str(path), APOTHIC_LIV_API_KEY=world.key)
    if case == "unreachable":
        env["APOTHIC_LIV_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    worker = world.start_worker(env, f"worker-{config['worker']['control_task_queue']}.log")
    try:
        monkeypatch.setenv("APOTHIC_CONFIG", str(path))
        app, _ = stub_app(world, app_name, model)
        app._cp = ControlPlaneClient(world.address)  # reads the settings again: this worker's queue
        with pytest.raises(LivError) as info:
            app.deploy()
    finally:
        stop(worker)
    text = str(info.value)
    if case == "no endpoint":
        assert "no model is configured on the control worker: APOTHIC_LIV_BASE_URL (liv.base_url) is not set" in text
    else:
        assert f"cannot reach the model at {env['APOTHIC_LIV_BASE_URL']}" in text
    assert "Fix: " in text and world.key not in text


def test_a_control_worker_killed_while_the_model_answers_loses_nothing(world: World, app_name: str, model: str) -> None:
    held = threading.Event()
    world.model.script(model, Reply.code(GOOD, hold=held), Reply.code(GOOD))
    app, fn = stub_app(world, app_name, model, cache="app")
    outcome: dict[str, Any] = {}

    def deploy() -> None:
        try:
            outcome["deployed"] = app.deploy()
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome["error"] = e

    thread = threading.Thread(target=deploy)
    thread.start()
    world.model.wait_for_requests(model, 1)
    world.worker.send_signal(signal.SIGKILL)
    world.worker.wait(10)
    world.worker = world.start_worker()
    held.set()  # the answer goes to a worker that is gone
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["deployed"].version == 1
    assert fn.remote(" B ") == "status:b"
    assert len(world.model.requests_for(model)) == 2  # the lost call was made again, once
    assert (world.home / "liv" / "apps" / app_name / f"{fn._apothic_liv_frozen.record.key}.json").exists()


def test_the_api_key_is_in_no_history_memo_or_file(world: World) -> None:
    """Runs last: every workflow of the namespace (jobs, fleets, containers, apps, generations,
    the ones where the server echoed the key in an error and in an answer), every file under
    APOTHIC_HOME and the server's database, searched for the key raw, escaped and in base64."""
    assert any(r.headers.get("Authorization") == f"Bearer {world.key}" for r in world.model.requests)
    patterns = forms(world.key)

    async def dump(client: Client) -> list[tuple[str, bytes]]:
        out = []
        async for wf in client.list_workflows():
            handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
            history = await handle.fetch_history()
            desc = await handle.describe()
            memo = json.dumps({k: str(v) for k, v in (desc.raw_description.workflow_execution_info.memo.fields.items())})
            out.append((wf.id, history.to_json().encode() + memo.encode()))
        return out

    found = [wid for wid, blob in world.temporal(dump) if any(p in blob for p in patterns)]
    assert not found, f"the API key is in the history or memo of {found}"
    files = [p for root in (world.tmp, world.home) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    holding = [str(p) for p in files if any(pat in read_if_there(p) for pat in patterns)]
    assert not holding, f"the API key is in {holding}"
    assert len(files) > 5 and any("liv" in str(p) for p in files)
