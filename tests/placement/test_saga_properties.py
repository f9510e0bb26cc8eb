"""Property tests of the placement saga: no instance stays rented once nobody needs it.

Two layers:

- The decisions, as pure functions (``activities/_needed.py``): which containers a fleet
  needs (:func:`needed_by`) and when a starting container has gone unneeded for the idle window
  (:class:`IdleClock`): it is given up at the first poll after the window, never earlier, never
  while it is needed.
- The Vast half of the saga for real: :func:`provision` under :func:`until_not_needed`, then
  the container workflow's last step (:meth:`VastHost.release`), against the simulator over
  HTTP with real instance processes, under sequences of API faults (429, 5xx), taken offers,
  dying hosts, images that cannot be pulled, a cancel, the fleet ceasing to need the container,
  and a worker killed (SIGKILL of a real process) mid-rental whose successor adopts the
  container (:meth:`VastHost.adopt`). The property: once nobody needs the container, no
  instance carrying its label is rented after the idle window plus one poll (plus the API's
  retry delays, which faults cause), and a container still needed ends with exactly one
  running instance. Temporal is not part of this layer (the workflow's own paths are tested
  end to end in ``tests/workflows/test_vast_idle.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from apothic.placement import compile_filters, rank
from apothic.placement.providers.vast import (
    ProvisionFailed,
    RetryPolicy,
    VastClient,
    VastError,
    VastRateLimited,
    provision,
)
from apothic.vastsim import Simulator, marked_pids
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from activities._hosts import VastHost
from activities._needed import IdleClock, NotNeeded, needed_by, until_not_needed
from apothic._contracts import ContainerRecord, Deployment, FleetStatus, FunctionSpec
from apothic._control._config import ProviderSettings

KEY = "saga-key"
FAST = RetryPolicy(attempts=4, base_s=0.01, max_s=0.05)
IDLE_S = 0.6
POLL_S = 0.1
# Beyond the idle window and one poll: the API's retries under injected faults and one destroy.
SLACK_S = 2.5

# ---------------------------------------------------------------------------- the decisions

records = st.lists(
    st.tuples(st.integers(0, 5), st.booleans()), min_size=0, max_size=8,
).map(lambda rows: [ContainerRecord(container_id=f"c-{i}", started_at=f"2026-01-01T00:00:0{t}", draining=d)
                    for i, (t, d) in enumerate(rows)])


def _status(containers: list[ContainerRecord], wanted: int) -> FleetStatus:
    dep = Deployment(app="a", function="f", version=1, spec=FunctionSpec(name="f", module="m", qualname="f"),
                     task_queue="q", fleet_id="fleet")
    return FleetStatus(deployment=dep, containers=containers, outstanding=[], failures=0, retired=False,
                       wanted=wanted)


@given(records, st.integers(0, 10))
def test_the_fleet_needs_its_oldest_active_containers_up_to_what_it_wants(containers, wanted) -> None:
    status = _status(containers, wanted)
    needed = [c for c in containers if needed_by(status, c.container_id)]
    active = [c for c in containers if not c.draining]
    assert len(needed) == min(wanted, len(active))
    assert not any(c.draining for c in needed)
    # Nobody needed is older than somebody needed: demand that falls gives up the newest first.
    for c in active:
        if c not in needed:
            assert all((n.started_at, n.container_id) < (c.started_at, c.container_id) for n in needed)
    assert not needed_by(status, "c-unknown")


answers = st.lists(st.tuples(st.floats(0.01, 1.0), st.sampled_from([True, False, None])), max_size=40)


@given(answers, st.floats(0.0, 3.0))
def test_a_starting_container_is_given_up_after_the_idle_window_and_not_before(seq, idle) -> None:
    clock = IdleClock(idle)
    now, unneeded_since = 0.0, None
    for gap, answer in seq:
        now += gap
        if answer is True:
            unneeded_since = None
        elif answer is False and unneeded_since is None:
            unneeded_since = now
        give_up = clock.observe(now, answer)
        if answer is True or unneeded_since is None:
            assert not give_up  # never while needed, never on silence alone
        else:
            # exactly when the window has passed since the first "not needed" in a row
            assert give_up == (now - unneeded_since >= idle)
        if give_up:
            return


# ---------------------------------------------------------------------------- the real saga


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(api_key=KEY, catalogue_seed=47, loading_s=0.3, machines=300)
    s.start()
    old = {k: os.environ.get(k) for k in ("VAST_URL", "VAST_API_KEY")}
    os.environ.update(VAST_URL=s.url, VAST_API_KEY=KEY)  # what VastHost's client reads
    try:
        yield s
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s.stop()
        assert marked_pids(s.token + ":") == [], "an instance process outlived the simulator"


FAULTS = st.lists(st.one_of(
    st.tuples(st.just("rate_limit"), st.integers(1, 3), st.sampled_from(["GET", "PUT", "DELETE", None])),
    st.tuples(st.just("fail_requests"), st.integers(1, 2), st.sampled_from([500, 502, 503]),
              st.sampled_from(["GET", "DELETE", None])),
    st.tuples(st.just("stick_loading")),
    st.tuples(st.just("take_first")),
    st.tuples(st.just("first_host_dies"), st.floats(0.0, 0.25)),
    st.tuples(st.just("fail_pull")),
), max_size=4)
ENDINGS = st.one_of(
    st.tuples(st.just("needed")),
    st.tuples(st.just("unneeded"), st.floats(0.0, 1.5)),
    st.tuples(st.just("cancel"), st.floats(0.0, 1.5)),
    st.tuples(st.just("kill"), st.floats(0.0, 0.6)),
)

# A control worker renting for a container, as a process of its own (killed with SIGKILL).
CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from apothic.placement import Offer
    from apothic.placement.providers.vast import RetryPolicy, VastClient, provision

    async def main():
        url, key, label, offers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        ranked = [Offer(**o) for o in offers]
        def on_event(kind, data):
            print(kind, flush=True)
        async with VastClient(key, url, retry=RetryPolicy(attempts=4, base_s=0.01, max_s=0.05)) as client:
            await provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10, label=label,
                            ready_timeout_s=3, on_event=on_event, poll_interval_s=0.05, max_offers=3)
        await asyncio.sleep(300)

    asyncio.run(main())
""")


def _arm(sim: Simulator, faults: list[tuple[Any, ...]], first: str) -> None:
    sim.clear_faults()
    for fault in faults:
        kind = fault[0]
        if kind == "rate_limit":
            sim.rate_limit(fault[1], method=fault[2])
        elif kind == "fail_requests":
            sim.fail_requests(fault[1], fault[2], method=fault[3])
        elif kind == "stick_loading":
            sim.stick_loading(count=1)
        elif kind == "take_first":
            sim.take_offer(int(first))
        elif kind == "first_host_dies":
            sim.host_dies(offer_id=int(first), after_s=fault[1])
        elif kind == "fail_pull":
            sim.fail_pull(count=1)


def _rented(sim: Simulator, label: str) -> list[dict[str, Any]]:
    return [i for i in sim.state()["instances"] if i["label"] == label and not i["destroyed"]]


async def _release(host: VastHost, label: str) -> None:
    """The container workflow's last step: release, retried as its activity is (10 attempts)."""
    for attempt in range(10):
        try:
            await host.release(label)
            return
        except Exception:  # noqa: BLE001 - an API fault: the activity would be retried
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("release failed 10 times")


# No shrinking: each example takes seconds of real HTTP and processes, and a failure's message
# already names its faults and ending.
@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(faults=FAULTS, ending=ENDINGS)
def test_no_instance_stays_rented_once_nobody_needs_it(sim: Simulator, faults, ending) -> None:
    asyncio.run(_saga(sim, faults, ending))


async def _saga(sim: Simulator, faults: list[tuple[Any, ...]], ending: tuple[Any, ...]) -> None:
    label = f"c-{uuid.uuid4().hex[:10]}"
    host = VastHost(ProviderSettings())
    async with VastClient(api_key=KEY, base_url=sim.url, retry=FAST, timeout_s=5, reconcile_interval_s=0.05) as c:
        query = compile_filters(max_cost_per_hour_usd=5.0)
        ranked = rank(query, await c.search(query))[:3]
        seen = len(sim.requests())
        _arm(sim, faults, ranked[0].offer_id)
        loop = asyncio.get_running_loop()
        kind = ending[0]
        # When the fleet stops needing the container (None: it always needs it).
        when: dict[str, float | None] = {"unneeded": loop.time() + ending[1] if kind in ("unneeded", "cancel")
                                         else None}

        async def ask() -> bool:
            at = when["unneeded"]
            return at is None or loop.time() < at

        if kind == "kill":
            outcome = await _killed_then_adopted(sim, host, c, label, ranked, ending[1], ask, when)
        else:
            saga = asyncio.ensure_future(until_not_needed(
                provision(c, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10, label=label,
                          ready_timeout_s=3, poll_interval_s=0.05, max_offers=3),
                ask, IDLE_S, every_s=POLL_S))
            if kind == "cancel":
                await asyncio.wait({saga}, timeout=ending[1])
                saga.cancel()
            try:
                await saga
                outcome = "running"
            except (NotNeeded, ProvisionFailed, VastRateLimited, asyncio.CancelledError) as e:  # (429: retried)
                outcome = type(e).__name__
        left = _rented(sim, label)
        if outcome == "running":
            # Still needed, or it reached running before the window passed (its runtime then
            # drains it after the idle window): exactly one instance, running.
            # (A host armed to die may die after that: the container's watch then ends it.)
            ok = {"running", "offline"} if any(f[0] == "first_host_dies" for f in faults) else {"running"}
            assert len(left) == 1 and left[0]["actual_status"] in ok, (faults, ending, left)
            await _release(host, label)
        else:
            # Given up (not needed, cancelled, failed): the saga's own cleanup destroys what it
            # rented, best effort (a destroy still refused after the client's retries is
            # logged); the workflow's release, which runs next whatever happened, makes sure.
            await _release(host, label)
            ended = loop.time()
            at = when["unneeded"] if when["unneeded"] is not None else ended
            # A destroy refused with 429 is retried with the production backoff by the host
            # (VastHost's own client), which the bound allows for.
            refused = sum(f[1] for f in faults if f[0] == "rate_limit" and f[2] in ("DELETE", None))
            backoff = sum(min(RetryPolicy().max_s, RetryPolicy().base_s * 2**i) for i in range(refused))
            assert ended - min(at, ended) <= IDLE_S + POLL_S + SLACK_S + backoff, (faults, ending, outcome, ended - at)
        assert _rented(sim, label) == [], (faults, ending, outcome)
        made = [r for r in sim.requests()[seen:] if r["method"] == "PUT" and "/asks/" in r["path"]
                and r["status"] == 200]
        assert len(made) <= 6, made  # at most max_offers per start, and one start again after a kill


async def _killed_then_adopted(sim: Simulator, host: VastHost, client: VastClient, label: str, ranked: list,
                               delay: float, ask: Any, when: dict[str, float | None]) -> str:
    """Rent in a child process and SIGKILL it ``delay`` s after its create; the fleet stops
    needing the container at that moment (the worst case: nobody left to act on it). Then do
    what the activity's next attempt does: adopt (token 0: the rental never completed), and
    start again when nothing running was adopted."""
    import dataclasses
    import json

    offers = json.dumps([dataclasses.asdict(o) for o in ranked])
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, sim.url, KEY, label, offers,
                                                stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(_until_line(proc, {"created", "failed"}), 30)
        if line is not None:  # (else the child's start already failed, cleaning up after itself)
            await asyncio.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        when["unneeded"] = asyncio.get_running_loop().time()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    for attempt in range(10):  # an API error fails the attempt, which Temporal retries
        try:
            handle = await host.adopt(label, 0)
            break
        except VastError:
            await asyncio.sleep(0.05 * (attempt + 1))
    else:
        raise AssertionError("adopt failed 10 times")
    if handle is not None:  # it had reached running: its runtime would drain it when idle
        await host.close(handle)
        return "running"
    if line is None:
        return "ProvisionFailed"
    try:
        await until_not_needed(
            provision(client, ranked, image="x", env={}, onstart="exec sleep 300", disk_gb=10, label=label,
                      ready_timeout_s=3, poll_interval_s=0.05, max_offers=3),
            ask, IDLE_S, every_s=POLL_S)
    except (NotNeeded, ProvisionFailed, VastRateLimited) as e:
        return type(e).__name__
    return "running"


async def _until_line(proc: asyncio.subprocess.Process, wanted: set[str]) -> str | None:
    """The first of ``wanted`` the child prints (None: it failed or ended first)."""
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode().strip()
        if not line or line == "failed":
            return None
        if line in wanted:
            return line
