"""apothic.Dict and apothic.Queue against the real dev server and control worker, from a client
and from function containers. Restarts of the worker and the server: test_coord_survival.py."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from pathlib import Path

import pytest
from apothic.workflows._dict import DictWorkflow
from apothic.workflows._queue import QueueWorkflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

import apothic
from apothic import App
from apothic._contracts import COORD_MAX_STATE_BYTES, CoordStats, DictState
from apothic._control._client import get_client
from apothic._control._loop import run_async, run_blocking

from ..conftest import wait_until

pytestmark = pytest.mark.usefixtures("control_worker")
HISTORIES = sorted((Path(__file__).resolve().parent / "histories" / "coord").glob("*.json"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stats(obj: apothic.Dict | apothic.Queue) -> CoordStats:
    return run_blocking(obj._query("stats", result_type=CoordStats))


def history_events(address: str, workflow_id: str) -> list:
    async def fetch() -> list:
        client = await Client.connect(address)
        return list((await client.get_workflow_handle(workflow_id).fetch_history()).events)

    return asyncio.run(fetch())


# --- Dict ---


def test_a_dict_reads_and_writes_like_a_dict(temporal: str) -> None:
    d = apothic.Dict.from_name(unique("d"), create_if_missing=True)
    d["a"] = 1
    d[1] = "one"
    d[(1, "x")] = {"nested": [1, 2]}
    assert d["a"] == 1 and d[1.0] == "one" and d[True] == "one"  # equal numbers are one key, as in Python
    assert d[(1.0, "x")] == {"nested": [1, 2]}
    assert d.get("missing") is None and d.get("missing", 7) == 7
    with pytest.raises(KeyError):
        d["missing"]
    assert "a" in d and "b" not in d and d.contains(1) and len(d) == 3 == d.len()
    d.update({"k": [1, 2]}, z=3)
    d.update([("pair", 1)])
    assert d.put("a", 99, skip_if_exists=True) is False and d["a"] == 1
    assert d.put("fresh", 5, skip_if_exists=True) is True
    d["a"] = 2  # an existing key keeps its place
    assert list(d.keys()) == ["a", 1, (1, "x"), "k", "z", "pair", "fresh"]
    assert list(d) == list(d.keys())
    assert list(d.values())[:2] == [2, "one"]
    assert dict(d.items())["k"] == [1, 2]
    assert d.pop("z") == 3 and d.pop("z", "gone") == "gone"
    with pytest.raises(KeyError):
        d.pop("z")
    del d["pair"]
    with pytest.raises(KeyError):
        del d["pair"]
    assert len(d) == 5
    d.clear()
    assert len(d) == 0 and list(d.items()) == []


def test_large_values_go_to_the_blob_store_and_the_history_stays_small(temporal: str) -> None:
    d = apothic.Dict.from_name(unique("big"), create_if_missing=True)
    big = bytes(range(256)) * 8000  # 2 MB
    d["big"] = big
    d["medium"] = "m" * 5000
    assert d["big"] == big and d["medium"] == "m" * 5000
    s = stats(d)
    assert s.count == 2 and s.state_bytes < 1000  # two references, not megabytes
    sizes = [e.ByteSize() for e in history_events(temporal, d.workflow_id)]
    assert max(sizes) < 5000 and sum(sizes) < 20_000


def test_missing_deleted_and_recreated(temporal: str) -> None:
    name = unique("life")
    with pytest.raises(apothic.NotFoundError, match=rf"Dict '{name}' does not exist.*create_if_missing=True"):
        apothic.Dict.from_name(name).get("x")
    with pytest.raises(apothic.NotFoundError):
        apothic.Dict.from_name(name).hydrate()
    apothic.Dict.objects.create(name)
    with pytest.raises(apothic.InvalidError, match="exists already"):
        apothic.Dict.objects.create(name)
    apothic.Dict.objects.create(name, allow_existing=True)
    d = apothic.Dict.from_name(name).hydrate()
    d["k"] = "v"
    wait_until(lambda: name in [x.name for x in apothic.Dict.objects.list()], timeout=10, what="the Dict to be listed")
    apothic.Dict.delete(name)
    for call in (lambda: d["k"], lambda: d.put("k", 1), lambda: len(d), lambda: d.pop("k")):
        with pytest.raises(apothic.NotFoundError, match=rf"Dict '{name}' was deleted"):
            call()
    with pytest.raises(apothic.NotFoundError):
        apothic.Dict.delete(name)
    apothic.Dict.delete(name, allow_missing=True)
    again = apothic.Dict.from_name(name, create_if_missing=True)
    assert len(again) == 0  # a new, empty Dict under the old name
    assert d.get("k") is None  # the old handle follows the name
    run_blocking(apothic.Queue.objects.delete.aio(unique("never"), allow_missing=True))


def test_a_full_dict_refuses_writes_with_the_fix(temporal: str) -> None:
    d = apothic.Dict.from_name(unique("full"), create_if_missing=True)
    value = "v" * 4000  # just under the inline limit: about 5.4 KB of state each
    with pytest.raises(apothic.InvalidError) as e:
        for batch in range(100):
            d.update({(batch, i): value for i in range(40)})
    msg = str(e.value)
    assert "is full: this write needs" in msg and f"of {COORD_MAX_STATE_BYTES:,} bytes" in msg
    assert "Fix: delete keys you no longer need" in msg
    s = stats(d)
    assert s.state_bytes <= COORD_MAX_STATE_BYTES and 200 < s.count < 300
    d.pop((0, 0))
    d["small"] = 1  # room again
    d["large"] = "L" * 100_000  # a reference fits where the inline value would not
    assert d["large"] == "L" * 100_000


# --- Queue ---


def test_a_queue_is_fifo_per_partition(temporal: str) -> None:
    q = apothic.Queue.from_name(unique("q"), create_if_missing=True)
    q.put("a")
    q.put_many(["b", "c", {"d": 4}])
    q.put(1, partition="side")
    q.put_many([2, 3], partition="side")
    assert q.len() == 4 == len(q) and q.len(partition="side") == 3 and q.len(total=True) == 7
    assert list(q.iterate()) == ["a", "b", "c", {"d": 4}]  # reading does not remove
    assert q.get() == "a" and q.get_many(2) == ["b", "c"]
    assert q.get(partition="side") == 1
    assert q.get_many(10) == [{"d": 4}]
    assert q.get(block=False) is None and q.get_many(3, block=False) == []
    q.clear(partition="side")
    assert q.len(total=True) == 0
    q.put_many(range(5), partition="x")
    q.put("y", partition="y")
    q.clear(all=True)
    assert q.len(total=True) == 0 and list(q.iterate(partition="x")) == []
    big = b"\x01" * 600_000  # an item in the blob store
    q.put(big)
    assert q.get() == big


def test_blocking_gets_wait_for_a_put_or_their_timeout(temporal: str) -> None:
    q = apothic.Queue.from_name(unique("block"), create_if_missing=True)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=1.0)
    assert 1.0 <= time.monotonic() - t0 < 10
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=60)))
    waiter.start()
    wait_until(lambda: stats(q).waiting == 1, timeout=30, what="the get to wait in the workflow")
    put_at = time.monotonic()
    q.put("hello")
    waiter.join(30)
    assert got == ["hello"] and time.monotonic() - put_at < 5


def test_more_waiting_gets_than_slots_all_get_an_item(temporal: str) -> None:
    q = apothic.Queue.from_name(unique("many"), create_if_missing=True)
    got: list = []
    lock = threading.Lock()

    def consume() -> None:
        item = q.get(timeout=120)
        with lock:
            got.append(item)

    threads = [threading.Thread(target=consume) for _ in range(9)]
    for t in threads:
        t.start()
    wait_until(lambda: stats(q).waiting == 5, timeout=30, what="five gets to wait (the rest ask again)")
    for i in range(9):
        q.put(i)  # puts get through although gets hold slots
    for t in threads:
        t.join(120)
    assert sorted(got) == list(range(9))


def test_a_cancelled_get_takes_no_item(temporal: str) -> None:
    q = apothic.Queue.from_name(unique("cancel"), create_if_missing=True)

    async def scenario() -> object:
        task = asyncio.ensure_future(q.aio.get(timeout=300))
        while (await run_async(q._query("stats", result_type=CoordStats))).waiting != 1:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def released() -> None:
            while (await run_async(q._query("stats", result_type=CoordStats))).waiting != 0:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(released(), 10)  # by the signal: its own wait would last 20 s
        await q.aio.put("kept")
        return await q.aio.get(block=False)

    assert asyncio.run(scenario()) == "kept"


def test_a_full_partition_blocks_or_refuses_puts(temporal: str) -> None:
    q = apothic.Queue.from_name(unique("fullq"), create_if_missing=True)
    q.put_many(list(range(5000)))
    with pytest.raises(queue.Full, match="holds 5,000 items of at most 5,000"):
        q.put("x", block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("x", timeout=0.5)
    assert time.monotonic() - t0 >= 0.5
    done = threading.Event()
    putter = threading.Thread(target=lambda: (q.put("last", timeout=60), done.set()))
    putter.start()
    assert not done.wait(0.5)
    assert q.get() == 0  # room for one
    assert done.wait(30)
    assert q.len() == 5000 and list(q.iterate())[-1] == "last"
    q.put("other partition", partition="p", block=False)


def test_continue_as_new_keeps_items_order_and_waiters(temporal: str) -> None:
    q = apothic.Queue.from_name(unique("can"), create_if_missing=True)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=300, partition="late")))
    waiter.start()
    wait_until(lambda: stats(q).waiting == 1, timeout=30, what="the get to wait")

    async def stream(j: int) -> None:
        for i in range(210):
            await q.aio.put(i, partition=f"p{j}")

    async def all_streams() -> None:
        await asyncio.gather(*(stream(j) for j in range(5)))

    asyncio.run(all_streams())  # 1,050 updates: more than one run holds
    assert stats(q).runs >= 2
    for j in range(5):
        assert q.get_many(1000, partition=f"p{j}") == list(range(210))
    q.put("after", partition="late")
    waiter.join(60)
    assert got == ["after"]


# --- both ---


def test_aio_twins_and_async_ephemerals(temporal: str) -> None:
    async def scenario() -> None:
        async with apothic.Dict.ephemeral() as d, apothic.Queue.ephemeral() as q:
            await d.aio.put("k", "v")
            await d.update.aio({"n": 1})  # Modal's spelling
            assert await d.aio.get("k") == "v" and await d.aio.contains("n") and await d.aio.len() == 2
            assert [kv async for kv in d.aio.items()] == [("k", "v"), ("n", 1)]
            assert await d.aio.pop("n") == 1
            await q.aio.put_many([1, 2])
            assert await q.get.aio() == 1 and await q.aio.get_many(5, timeout=1) == [2]
            with pytest.raises(queue.Empty):
                await q.aio.get(timeout=0.2)
            assert [x async for x in q.aio.iterate()] == []
        with pytest.raises(apothic.NotFoundError, match="was deleted"):
            await d.aio.get("k")

    asyncio.run(scenario())


def test_an_ephemeral_dict_is_deleted_at_exit_and_when_its_owner_is_gone(temporal: str) -> None:
    with apothic.Dict.ephemeral() as d:
        d["x"] = 1
        assert d["x"] == 1 and d.name is None
    with pytest.raises(apothic.NotFoundError, match="ephemeral Dict"):
        d["x"]

    async def lease() -> None:  # an owner that stopped beating: the workflow ends itself
        client = await get_client()  # the SDK's own client (signed payloads)
        handle = await client.start_workflow(DictWorkflow.run, DictState(name="lease", lease_s=1.0),
                                             id=f"apothic-dict:~{uuid.uuid4().hex[:20]}", task_queue="apothic-control")
        await asyncio.wait_for(handle.result(), 30)

    run_blocking(lease())


def test_functions_use_dicts_and_queues(temporal: str, app_name: str) -> None:
    app = App(app_name)
    results = unique("results")

    @app.function(timeout_s=120)
    def produce(q: apothic.Queue, n: int) -> int:
        d = apothic.Dict.from_name(results, create_if_missing=True)
        for i in range(n):
            q.put(i * i)
            d[i] = f"square of {i}"
        return len(d)

    @app.function(timeout_s=120)
    async def double_next(queue_name: str) -> int:
        q = apothic.Queue.from_name(queue_name)
        return 2 * await q.aio.get(timeout=90)

    app.deploy()
    with apothic.Queue.ephemeral() as q:
        assert produce.remote(q, 4) == 4
        assert q.get_many(10) == [0, 1, 4, 9]
    assert apothic.Dict.from_name(results)[3] == "square of 3"

    name = unique("to-fn")
    apothic.Queue.objects.create(name)
    job = double_next.spawn(name)
    wait_until(lambda: stats(apothic.Queue.from_name(name)).waiting == 1, timeout=90,
               what="the function to wait on the queue")
    apothic.Queue.from_name(name).put(21)
    assert job.wait(timeout_s=60) == 42


# --- replay ---


def test_recorded_histories_replay() -> None:
    assert {p.name.split("-")[0] for p in HISTORIES} == {"DictWorkflow", "QueueWorkflow"}
    replayer = Replayer(workflows=[DictWorkflow, QueueWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
    for path in HISTORIES:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = asyncio.run(replayer.replay_workflow(history, raise_on_replay_failure=False))
        assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
