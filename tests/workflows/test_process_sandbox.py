"""The process provider gives a function the filesystem and the limits a container would:
the image's files at their absolute paths, its workdir as the current folder, volumes at their
mount paths, and ``cpu``/``memory_mb`` enforced by a cgroup of its own (past its memory the
function fails as out of memory, by its own retries).

Against real parts: the dev server, a control worker, process containers (as root, in a
private mount namespace and a cgroup), and the Docker engine for the same spec there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import apothic
from apothic import App, Image, Volume

from ..conftest import job_info, wait_until
from .test_hostile import wait_for_the_supervisor

pytestmark = pytest.mark.usefixtures("control_worker")

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def look(merged: str) -> dict:
    """What a function sees: its cwd, the image's files, a host folder with image files merged
    in, and where its writes go."""
    import os

    def read(path: str) -> str:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as e:
            return f"missing: {e.strerror}"

    before = read("/srv/written.txt")
    with open("/srv/written.txt", "w") as f:  # the container's own layer, not the host's /srv
        f.write(f"by {os.getpid()}")
    with open(os.path.join(merged, "from-function.txt"), "w") as f:
        f.write("function")
    return {
        "cwd": os.getcwd(),
        "payload": read("/srv/payload.txt"),
        "relative": read("payload.txt"),
        "merged": sorted(os.listdir(merged)),
        "host_file": read(os.path.join(merged, "host.txt")),
        "image_file": read(os.path.join(merged, "image.txt")),
        "written_before": before,
        "volume": sorted(os.listdir("/srv/data")),
    }


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A payload, a folder for the image, and a host folder the image adds files to."""
    (tmp_path / "payload.txt").write_text("the payload\n")
    (tmp_path / "image-dir").mkdir()
    (tmp_path / "image-dir" / "image.txt").write_text("from the image\n")
    host = tmp_path / "host-dir"
    host.mkdir()
    (host / "host.txt").write_text("on the host\n")
    return {"payload": tmp_path / "payload.txt", "image_dir": tmp_path / "image-dir", "host": host}


def test_the_images_files_are_at_their_absolute_paths_with_its_workdir_as_cwd_and_writes_stay_in_the_container(
    app_name: str, files: dict[str, Path]
) -> None:
    app = App(app_name)
    host = str(files["host"])
    image = (
        Image.debian_slim(python_version=PY)
        .workdir("/srv")
        .add_local_file(files["payload"], "/srv/payload.txt")
        .add_local_dir(files["image_dir"], host)  # over a folder that exists on the host
    )
    vol = Volume.from_name(f"{app_name}-vol", create_if_missing=True)
    vol_folder = Path(os.environ["APOTHIC_HOME"]) / "volumes" / f"{app_name}-vol"

    @app.function(image=image, volumes={"/srv/data": vol}, timeout_s=120, max_containers=1)
    def inside(merged: str, marker: str) -> dict:
        with open(f"/srv/data/{marker}", "w") as f:
            f.write(marker)
        return look(merged)

    app.deploy()
    job = inside.spawn(host, "first.txt")
    out = job.wait(timeout_s=600)
    assert out["cwd"] == "/srv"
    assert out["payload"] == out["relative"] == "the payload"
    assert out["merged"] == ["from-function.txt", "host.txt", "image.txt"]
    assert out["host_file"] == "on the host" and out["image_file"] == "from the image"
    assert out["written_before"].startswith("missing")
    assert out["volume"] == ["first.txt"]
    assert job_info(os.environ["APOTHIC_TEMPORAL_ADDRESS"], job.job_id).placement.provider == "process"
    # Nothing was rebased, nothing leaked: the host sees neither the image's files nor the writes,
    # except in the volume, whose writes are the host's folder.
    for name in ("payload.txt", "written.txt", "data"):  # the volume's mount point is in the layer too
        assert not os.path.exists(f"/srv/{name}"), name
    assert sorted(os.listdir(host)) == ["host.txt"]
    assert sorted(p.name for p in vol_folder.iterdir()) == ["first.txt"]
    # The same container again: its own writes are still there (one layer per container).
    again = inside.remote(host, "second.txt", timeout_s=120)
    assert again["written_before"].startswith("by ") and again["volume"] == ["first.txt", "second.txt"]


def test_the_same_spec_sees_the_same_files_on_docker(app_name: str, files: dict[str, Path]) -> None:
    app = App(app_name)
    host = str(files["host"])
    image = (
        Image.debian_slim(python_version=PY)
        .workdir("/srv")
        .add_local_file(files["payload"], "/srv/payload.txt")
        .add_local_dir(files["image_dir"], host)
        .run_commands(f"mkdir -p {host} && echo on the host > {host}/host.txt")  # a container-only step
    )
    vol = Volume.from_name(f"{app_name}-vol", create_if_missing=True)

    @app.function(image=image, volumes={"/srv/data": vol}, timeout_s=120)
    def inside(merged: str, marker: str) -> dict:
        with open(f"/srv/data/{marker}", "w") as f:
            f.write(marker)
        return look(merged)

    app.deploy()
    job = inside.spawn(host, "first.txt")
    out = job.wait(timeout_s=900)
    assert job_info(os.environ["APOTHIC_TEMPORAL_ADDRESS"], job.job_id).placement.provider == "docker"
    assert out == {
        "cwd": "/srv", "payload": "the payload", "relative": "the payload",
        "merged": ["from-function.txt", "host.txt", "image.txt"], "host_file": "on the host",
        "image_file": "from the image", "written_before": out["written_before"], "volume": ["first.txt"],
    }
    assert out["written_before"].startswith("missing")


def test_files_at_the_images_root_go_to_docker_not_rebased(app_name: str, files: dict[str, Path]) -> None:
    app = App(app_name)
    image = Image.debian_slim(python_version=PY).add_local_file(files["payload"], f"/{app_name}.txt")

    @app.function(image=image, timeout_s=120)
    def read_it() -> str:
        with open(f"/{app_name}.txt") as f:
            return f.read().strip()

    app.deploy()
    job = read_it.spawn()
    assert job.wait(timeout_s=900) == "the payload"
    info = job_info(os.environ["APOTHIC_TEMPORAL_ADDRESS"], job.job_id)
    assert info.placement.provider == "docker"
    assert not os.path.exists(f"/{app_name}.txt")


@pytest.mark.parametrize("provider", ["process", "docker"])
def test_a_function_past_its_memory_fails_as_out_of_memory_once_per_retry(app_name: str, provider: str) -> None:
    app = App(app_name)
    # A container-only step sends the same function to Docker; the volume counts the runs.
    image = None if provider == "process" else Image.debian_slim(python_version=PY).run_commands("true")
    vol = Volume.from_name(f"{app_name}-runs", create_if_missing=True)
    runs = Path(os.environ["APOTHIC_HOME"]) / "volumes" / f"{app_name}-runs" / "runs"

    # 160 MB: the supervisor and a runtime take about 60-80 MB of it together.
    @app.function(memory_mb=160, retries=apothic.Retries(max_retries=1, initial_delay=0.1), timeout_s=120,
                  image=image, volumes={"/runs": vol})
    def hungry(mb: int) -> int:
        if not mb:
            wait_for_the_supervisor()
            return 0
        with open("/runs/runs", "a") as f:
            f.write("run\n")
        print(f"allocating {mb} MB", flush=True)
        block = bytearray(mb << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block)

    app.deploy()
    first = hungry.spawn(0)
    assert first.wait(timeout_s=900) == 0
    address = os.environ["APOTHIC_TEMPORAL_ADDRESS"]
    assert job_info(address, first.job_id).placement.provider == provider
    assert hungry.remote(10, timeout_s=120) == 10 << 20  # within its memory: fine
    runs.unlink()
    job = hungry.spawn(500)
    with pytest.raises(apothic.RemoteError) as err:
        job.wait(timeout_s=300)
    message = str(err.value)
    assert err.value.remote_type == "apothic.ProcessDied"
    assert "ran out of memory (memory_mb=160; the kernel's out-of-memory killer" in message, message
    assert "allocating 500 MB" in message and "Fix: give the function more memory" in message
    info = job_info(address, job.job_id)
    assert [(a.kind, a.retried) for a in info.attempts] == [("user", True), ("user", False)], info.attempts
    assert runs.read_text() == "run\nrun\n"  # retries=1: twice, no infrastructure retry
    assert all("out of memory" in a.reason for a in info.attempts), info.attempts
    # The container lives on: a fresh process serves the next input.
    assert hungry.remote(10, timeout_s=120) == 10 << 20


def test_the_cpu_and_memory_limits_are_where_a_container_reads_them_and_cpu_is_enforced(app_name: str) -> None:
    app = App(app_name)

    @app.function(cpu=1, memory_mb=300, timeout_s=120)
    def limits() -> dict:
        import multiprocessing
        import os
        import time

        def read(path: str) -> str:
            with open(path) as f:
                return f.read().strip()

        def spin(until: float) -> None:
            while time.monotonic() < until:
                pass

        v2 = os.path.exists("/sys/fs/cgroup/cpu.max")
        stat = "/sys/fs/cgroup/cpu.stat" if v2 else "/sys/fs/cgroup/cpu/cpu.stat"

        def throttled() -> int:
            fields = dict(line.split() for line in read(stat).splitlines())
            return int(fields["nr_throttled"])

        before = throttled()
        deadline = time.monotonic() + 20
        while throttled() == before and time.monotonic() < deadline:  # two busy processes, one core
            procs = [multiprocessing.Process(target=spin, args=(time.monotonic() + 0.5,)) for _ in range(2)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
        return {
            "cgroup": read("/proc/self/cgroup"),
            "cpu": read("/sys/fs/cgroup/cpu.max") if v2
            else read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") + " " + read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
            "memory": read("/sys/fs/cgroup/memory.max") if v2 else read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "throttled": throttled() - before,
        }

    app.deploy()
    job = limits.spawn()
    out = job.wait(timeout_s=300)
    cid = job_info(os.environ["APOTHIC_TEMPORAL_ADDRESS"], job.job_id).placement.container_id
    record = Path(os.environ["APOTHIC_HOME"]) / "logs" / "containers" / f"{cid}.cgroup"
    dirs = record.read_text().split()  # while it idles
    assert len(dirs) in (1, 2) and all(d.endswith(f"/apothic/{cid}") and os.path.isdir(d) for d in dirs)
    wait_until(lambda: not record.exists() and not any(os.path.exists(d) for d in dirs), timeout=60,
               what="the cgroup to be removed after the container drained")
    assert out["cpu"] == "100000 100000"
    assert out["memory"] == str(300 << 20)
    assert out["throttled"] > 0, out
    # Its own cgroup namespace: the container's groups are the root, as in Docker.
    groups = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in out["cgroup"].splitlines()}
    assert set(groups.values()) == {"/"}, out["cgroup"]


# --- what the process provider refuses, and why (no server needed) ---


def test_the_image_paths_are_the_outermost_folders_of_its_files_and_workdir(tmp_path: Path) -> None:
    from apothic.placement.providers.images import image_paths

    (tmp_path / "f.txt").write_text("x")
    image = (
        Image.debian_slim(python_version=PY)
        .workdir("/srv/app")
        .add_local_file(tmp_path / "f.txt", "/srv/f.txt")
        .add_local_file(tmp_path / "f.txt", "/opt/tool/conf/f.txt")
        .add_local_dir(tmp_path, "/opt/tool")
    )
    assert image_paths(image) == ["/srv", "/opt/tool"]
    assert image_paths(Image.debian_slim(python_version=PY).workdir("/")) == []
    assert image_paths(Image.debian_slim(python_version=PY).add_local_file(tmp_path / "f.txt", "/f.txt")) == ["/"]


def test_image_paths_the_process_provider_cannot_show_are_refused_naming_the_path_and_docker(tmp_path: Path) -> None:
    from apothic.activities._hosts import ProcessHost

    from apothic._contracts import FunctionSpec
    from apothic._control._config import ProviderSettings, apothic_home

    (tmp_path / "f.txt").write_text("x")
    host = ProcessHost(ProviderSettings(enabled=("process", "docker")))

    def why(remote: str) -> str | None:
        image = Image.debian_slim(python_version=PY).add_local_file(tmp_path / "f.txt", remote)
        return host.usable_for(FunctionSpec(name="f", image=image.to_dict()))

    assert why("/srv/f.txt") is None
    root = why("/f.txt")
    assert root is not None and "image's root /" in root and "docker provider" in root and "/srv" in root
    # A folder holding this host's state: the container's writes there must reach the host.
    home = str(apothic_home())
    over = why(f"{os.path.dirname(home)}/f.txt")
    assert over is not None and f"image path {os.path.dirname(home)} holds" in over and "docker provider" in over
    odd = why("/srv/a,b/f.txt")
    assert odd is not None and "/srv/a,b" in odd


def test_without_a_cgroup_the_process_provider_leaves_functions_to_docker_saying_why() -> None:
    """A host whose cgroup folders are read-only (as in an unprivileged container): made so for
    one interpreter, in a private mount namespace of its own."""
    script = (
        "from apothic.activities import _limits\n"
        "from apothic.activities._hosts import ProcessHost\n"
        "from apothic._control._config import ProviderSettings\n"
        "from apothic._contracts import FunctionSpec\n"
        "spec = FunctionSpec(name='f', cpu=2, memory_mb=300)\n"
        "print(_limits.unavailable())\n"
        "print(ProcessHost(ProviderSettings(enabled=('process', 'docker'))).usable_for(spec))\n"
        "print(ProcessHost(ProviderSettings(enabled=('process',))).usable_for(spec))\n"
    )
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2")]
    assert mounts, "no cgroup hierarchy is mounted"
    readonly = "; ".join(f"mount -o remount,bind,ro {m}" for m in mounts)
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
         f'set -e; {readonly}; exec "$0" -c "$1"', sys.executable, script],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert "Read-only file system" in out[0], out
    assert out[1].startswith("this host cannot enforce cpu=2 and memory_mb=300 for a process (") and \
        out[1].endswith("the docker provider enforces them"), out
    assert out[2] == "None", out  # docker off: it runs, and says the limits are not enforced


def test_a_containers_cgroup_goes_when_it_ends_even_with_no_worker_to_see_it(tmp_path: Path) -> None:
    from apothic.activities import _limits
    from apothic.placement.providers.process import join_command

    cid = f"c-sandbox-{os.getpid()}"
    group = _limits.create(tmp_path, cid, 1, 200)
    assert group.dirs and all(os.path.isdir(d) for d in group.dirs)
    memory_folder, _ = group.memory
    limit = "memory.max" if os.path.exists(f"{memory_folder}/memory.max") else "memory.limit_in_bytes"
    assert Path(memory_folder, limit).read_text().strip() == str(200 << 20)
    proc = subprocess.run(join_command(list(group.dirs), ["cat", "/proc/self/cgroup"]), capture_output=True,
                          text=True, check=True, env={**os.environ, "APOTHIC_CONTAINER_ID": cid})
    assert all(f"/apothic/{cid}" in line for line in proc.stdout.splitlines() if ":memory:" in line or ":cpu:" in line)
    # Nobody calls _limits.remove: the container's own remover does.
    wait_until(lambda: not any(os.path.exists(d) for d in group.dirs), timeout=30, what="the cgroup to go")
    _limits.remove(tmp_path, cid)  # the worker's removal afterwards: nothing left to do
    assert not list(tmp_path.glob("*.cgroup"))
