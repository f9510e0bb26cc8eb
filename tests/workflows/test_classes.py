"""Classes of an app against a real dev server, control worker and process containers:
@enter once per container, @exit at drain, methods through every way of calling, one
container per parameter set, with_options, and the errors a caller meets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import apothic
from apothic import App

from ..conftest import job_info, wait_until

pytestmark = pytest.mark.usefixtures("control_worker")


def containers(app: str) -> dict[str, set[int]]:
    """The function containers of ``app`` running on this host: container id -> its pids (a
    container may be a supervisor and its runtime)."""
    found: dict[str, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(v.split(b"=", 1) for v in (entry / "environ").read_bytes().split(b"\0") if b"=" in v)
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if env.get(b"APOTHIC_APP") == app.encode() and b"APOTHIC_CONTAINER_ID" in env and state != "Z":
            found.setdefault(env[b"APOTHIC_CONTAINER_ID"].decode(), set()).add(int(entry.name))
    return found


def container_of(app: str, pid: int) -> str:
    return next(cid for cid, pids in containers(app).items() if pid in pids)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_enter_runs_once_per_container_and_exit_at_drain(
    temporal: str, app_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APOTHIC_CONTAINER_IDLE_S", "8")  # no pause between the calls below drains it
    log = tmp_path / "lifecycle.txt"
    app = App(app_name)

    @app.cls()
    class Model:
        @apothic.enter()
        def load(self) -> None:
            with open(log, "a") as f:
                f.write(f"enter {os.getpid()}\n")
            print("loading the weights")
            self.weights = {"scale": 10}
            self.calls = 0

        @apothic.method()
        def predict(self, x: int) -> tuple[int, int, int]:
            self.calls += 1
            return os.getpid(), self.calls, x * self.weights["scale"]

        @apothic.method()
        def count(self, start: int, step: int = 1) -> list[int]:
            self.calls += 1
            return list(range(start, start + 3 * step, step))

        @apothic.method()
        def stream(self, n: int):  # noqa: ANN201 - a generator method
            for i in range(n):
                yield i * self.weights["scale"]

        @apothic.method()
        def check(self, x: int) -> int:
            if x < 0:
                raise ValueError(f"bad input {x}")
            return x

        @apothic.exit()
        def close(self) -> None:
            with open(log, "a") as f:
                f.write(f"exit {os.getpid()} after {self.calls} calls\n")

    app.deploy()
    model = Model()
    pid, calls, value = model.predict.remote(1)
    assert (calls, value) == (1, 10)
    assert model.predict.remote(2)[1:] == (2, 20)
    job = model.predict.spawn(3)
    assert job.wait()[1:] == (3, 30)
    assert job_info(temporal, job.job_id).function == "Model.predict"
    assert [v for _, _, v in model.predict.map([4, 5, 6])] == [40, 50, 60]
    assert model.count.starmap([(0, 2), (1,)]) == [[0, 2, 4], [1, 2, 3]]
    assert list(model.stream.remote_gen(3)) == [0, 10, 20]
    assert [j.wait()[2] for j in model.predict.spawn_map([7, 8])] == [70, 80]
    assert asyncio.run(model.predict.aio.remote(9))[2] == 90
    # A method's own exception comes back as itself, its traceback from the method's frame on.
    with pytest.raises(ValueError, match="bad input -1") as info:
        model.check.remote(-1)
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert 'in check\n    raise ValueError(f"bad input {x}")' in note and "_serve.py" not in note, note
    last_pid, last_calls, _ = model.predict.remote(10)
    # One container served every call and every method: the instance's state carried over.
    assert last_pid == pid
    assert last_calls == 12
    assert len(containers(app_name)) == 1 and container_of(app_name, pid)
    assert lines(log) == [f"enter {pid}"]
    # Idle for the window (8 s), the container drains: @exit runs once, after the last call.
    wait_until(lambda: len(lines(log)) == 2, timeout=60, what="the @exit method to run at drain")
    assert lines(log) == [f"enter {pid}", f"exit {pid} after 12 calls"]
    wait_until(lambda: not containers(app_name), timeout=30, what="the container to exit")
    logs = (Path(os.environ["APOTHIC_HOME"]) / "logs" / "containers").glob("*.log")
    ours = [p.read_text() for p in logs if f"serving apothic:{app_name}:Model:v1" in p.read_text()]
    assert len(ours) == 1
    assert "loading the weights" in ours[0]  # what @enter prints goes to the container's log


def where() -> tuple[str, str]:
    """In a container: its task queue (the instance's) and its id."""
    return os.environ["APOTHIC_TASK_QUEUE"], os.environ["APOTHIC_CONTAINER_ID"]


def test_each_parameter_set_gets_its_own_containers(app_name: str, tmp_path: Path) -> None:
    log = tmp_path / "enters.txt"
    app = App(app_name)

    @app.cls()
    class Model:
        size: str = apothic.parameter(default="small")
        layers: int = apothic.parameter(default=2)
        scale: float = apothic.parameter(default=1.0)
        tag: bytes = apothic.parameter(default=b"")

        @apothic.enter()
        def load(self) -> None:
            with open(log, "a") as f:
                f.write(f"{where()[1]} {self.size} {self.layers}\n")

        @apothic.method()
        def describe(self) -> tuple[tuple[str, str], str, int, float, bytes]:
            return where(), self.size, self.layers, self.scale, self.tag

    app.deploy()
    small = Model().describe.remote()
    large = Model(size="large", layers=8, scale=2, tag=b"\x00x").describe.remote()
    assert small[1:] == ("small", 2, 1.0, b"")
    assert large[1:] == ("large", 8, 2.0, b"\x00x")
    (small_queue, small_container), (large_queue, large_container) = small[0], large[0]
    assert small_queue.startswith(f"apothic:{app_name}:Model:v1:p") and large_queue.startswith(f"apothic:{app_name}:Model:v1:p")
    assert small_queue != large_queue and small_container != large_container
    # Each container ran @enter once, with its own parameters.
    assert sorted(lines(log)) == sorted([f"{small_container} small 2", f"{large_container} large 8"])
    # The same values, given or defaulted, in any order, from another handle: the same instance.
    assert Model(size="small", layers=2).describe.remote()[0][0] == small_queue
    found = apothic.Cls.from_name(app_name, "Model")
    assert found(tag=b"\x00x", scale=2.0, layers=8, size="large").describe.remote()[0][0] == large_queue
    mapped = found(size="large", layers=8, scale=2.0, tag=b"\x00x").describe.starmap([(), (), ()])
    assert {r[0][0] for r in mapped} == {large_queue}  # a map of an instance runs on the instance's fleet
    # A lookup by name checks the parameters against the deployed class when it calls.
    with pytest.raises(apothic.InvalidError, match=r"layers = 'eight'.*an int"):
        found(layers="eight").describe.remote()


def test_with_options_overrides_the_instance_options(app_name: str) -> None:
    app = App(app_name)

    @app.cls(timeout_s=60)
    class Slow:
        @apothic.method()
        def nap(self, seconds: float) -> str:
            import time

            time.sleep(seconds)
            return os.environ["APOTHIC_TASK_QUEUE"]

    app.deploy()
    base = Slow().nap.remote(2)
    assert base == f"apothic:{app_name}:Slow:v1"  # no parameters, no overrides: the class's own queue
    hurried = Slow.with_options(timeout_s=1)
    with pytest.raises(apothic.FunctionTimeoutError):
        hurried().nap.remote(3)
    # An instance of its own, on its own queue; the class's own instance keeps its timeout.
    quick = hurried().nap.remote(0)
    assert quick.startswith(f"{base}:p")
    assert Slow().nap.remote(2) == base
    # From a lookup by name, the same override names the same instance.
    assert apothic.Cls.from_name(app_name, "Slow").with_options(timeout_s=1)().nap.remote(0) == quick


@pytest.mark.parametrize("max_inputs", [1, 4])
def test_an_async_class_runs_enter_on_the_loop_of_its_inputs(app_name: str, max_inputs: int) -> None:
    app = App(app_name)

    @app.cls()
    @apothic.concurrent(max_inputs=max_inputs)
    class Service:
        @apothic.enter()
        async def connect(self) -> None:
            self.loop = asyncio.get_running_loop()
            self.lock = asyncio.Lock()  # bound to this loop: usable by every input
            self.seen = 0

        @apothic.method()
        async def ping(self, x: int) -> tuple[int, int]:
            async with self.lock:
                await asyncio.sleep(0.05)
                self.seen += 1
            assert asyncio.get_running_loop() is self.loop
            return x + 1, self.seen

    app.deploy()
    results = Service().ping.map(range(8))
    assert [r for r, _ in results] == list(range(1, 9))
    assert sorted(seen for _, seen in results) == list(range(1, 9))
    assert Service().ping.remote(0) == (1, 9)


def test_an_enter_that_raises_fails_the_calls_with_its_traceback(app_name: str) -> None:
    app = App(app_name)

    @app.cls()
    class Broken:
        @apothic.enter()
        def load(self) -> None:
            raise FileNotFoundError("weights.bin is missing")

        @apothic.method()
        def predict(self, x: int) -> int:
            return x

    app.deploy()
    with pytest.raises(apothic.PlacementError) as info:
        Broken().predict.remote(1, timeout_s=120)
    text = str(info.value)
    assert "exited with code 6" in text, text
    assert "an @enter method raised; the container stops" in text, text
    # The traceback starts at the user's frame and shows the line.
    assert 'in load\n    raise FileNotFoundError("weights.bin is missing")' in text, text
    assert "FileNotFoundError: weights.bin is missing" in text, text
    assert "_serve.py" not in text, text


def test_calls_that_cannot_reach_a_class_say_why(app_name: str) -> None:
    app = App(app_name)

    @app.cls()
    class Model:
        @apothic.method()
        def predict(self, x: int) -> int:
            return x

    @app.function()
    def plain() -> int:
        return 1

    with pytest.raises(apothic.NotFoundError, match="not deployed"):
        Model().predict.remote(1)
    app.deploy()
    with pytest.raises(apothic.NotFoundError, match=r"has no method 'guess'.*\['predict'\]"):
        apothic.Cls.from_name(app_name, "Model")().guess.remote(1)
    with pytest.raises(apothic.NotFoundError, match="is a function, not a class"):
        apothic.Cls.from_name(app_name, "plain")().predict.remote(1)
    with pytest.raises(apothic.NotFoundError, match="has no class 'Other'"):
        apothic.Cls.from_name(app_name, "Other")().predict.remote(1)
    assert Model().predict.remote(5) == 5


def test_exit_runs_on_sigterm_and_its_failure_does_not_fail_the_container(app_name: str, tmp_path: Path) -> None:
    import signal

    marker = tmp_path / "exit.txt"
    app = App(app_name)

    @app.cls()
    class Model:
        @apothic.method()
        def pid(self) -> int:
            return os.getpid()

        @apothic.exit()
        def close(self) -> None:
            marker.write_text("closing")
            raise RuntimeError("could not flush the cache")

    app.deploy()
    pid = Model().pid.remote()
    cid = container_of(app_name, pid)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not containers(app_name), timeout=30, what="the container to exit")
    assert marker.read_text() == "closing"
    folder = Path(os.environ["APOTHIC_HOME"]) / "logs" / "containers"
    log = (folder / f"{cid}.log").read_text()
    assert "an @exit method raised" in log and "RuntimeError: could not flush the cache" in log, log
    assert (folder / f"{cid}.exit").read_text().strip() == "0"
