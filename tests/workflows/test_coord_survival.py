"""apothic.Dict and apothic.Queue survive a killed control worker and a restarted Temporal server
(the dev server on the same SQLite file), with a blocking get waiting through each."""

from __future__ import annotations

import os
import threading
import time

import apothic
from apothic._contracts import CoordStats
from apothic._control._loop import run_blocking

from ..conftest import start_dev_server, stop, wait_until
from ._cluster import Cluster


def waiting(q: apothic.Queue) -> int:
    return run_blocking(q._query("stats", result_type=CoordStats)).waiting


def blocked_get(q: apothic.Queue, partition: str, into: list) -> threading.Thread:
    t = threading.Thread(target=lambda: into.append(q.get(timeout=300, partition=partition)), daemon=True)
    t.start()
    return t


def test_dicts_and_queues_survive_a_killed_worker_and_a_server_restart(cluster: Cluster) -> None:
    d = apothic.Dict.from_name("state", create_if_missing=True, client=cluster.client)
    q = apothic.Queue.from_name("work", create_if_missing=True, client=cluster.client)
    big = os.urandom(300_000)  # in the blob store
    d.update({"a": 1, ("t", 2): [1, 2], "big": big})
    q.put_many(["first", "second"])

    # 1. A blocking get waits while the control worker is killed and another one starts.
    got: list = []
    t = blocked_get(q, "w", got)
    wait_until(lambda: waiting(q) == 1, timeout=30, what="the get to wait")
    stop(cluster.worker, sig_kill=True)
    time.sleep(1)
    cluster.worker = cluster.start_worker()
    q.put("through the worker restart", partition="w")
    t.join(120)
    assert got == ["through the worker restart"]
    assert d["a"] == 1 and q.len() == 2

    # 2. The same through a restart of the server on the same database.
    got2: list = []
    t2 = blocked_get(q, "w2", got2)
    wait_until(lambda: waiting(q) == 1, timeout=30, what="the get to wait")
    stop(cluster.server)
    time.sleep(2)
    cluster.server = start_dev_server(cluster.db, cluster.port)
    q.put("through the server restart", partition="w2")  # retried by the SDK while the server starts
    t2.join(120)
    assert got2 == ["through the server restart"]

    assert d["big"] == big and d[("t", 2)] == [1, 2] and len(d) == 3
    assert q.get_many(10) == ["first", "second"]
    d["after"] = "restarts"
    assert dict(d.items())["after"] == "restarts"
    assert [x.name for x in apothic.Queue.objects.list(client=cluster.client)] == ["work"]
