"""Apothic quickstart: deploy an app, then call it with remote() and spawn().

    python examples/quickstart.py

With no APOTHIC_TEMPORAL_ADDRESS set, this starts the embedded Temporal dev server and a
control worker in the background (`apothic stop` stops them), deploys the app, and runs the
calls in function containers on this machine. It ends with the commands to look further.

Or call one function with the app live for the call only (removed when it ends):

    apothic run examples/quickstart.py::slow_square 7

Expected output:
    squaring 7
    49
"""

import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import apothic

app = apothic.App("quickstart")


@app.function(cpu=1, memory_mb=512, timeout_s=60)
def summarize(text: str) -> str:
    print(f"summarizing {len(text)} characters")
    return text[:40] + ("..." if len(text) > 40 else "")


@app.function(timeout_s=60, retries=apothic.Retries(max_retries=2, initial_delay=0.5))
def slow_square(x: int) -> int:
    print(f"squaring {x}")
    time.sleep(1)
    return x * x


def apothic_command() -> str:
    """How to type the `apothic` command of this interpreter from the current folder."""
    script = Path(sys.executable).parent / "apothic"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m apothic"
    on_path = shutil.which("apothic")
    if on_path and os.path.samefile(on_path, script):
        return "apothic"
    if script.is_relative_to(Path.cwd()):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return shlex.quote(str(script))


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # each line shows at once, even through a pipe
    deployment = app.deploy()
    print(f"deployed {deployment.app} version {deployment.version}: {', '.join(deployment.functions)}")

    started = time.perf_counter()
    print("remote():", summarize.remote("Apothic runs Python functions as durable Temporal workflows."))
    print(f"  first call (container start included): {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    summarize.remote("warm")
    print(f"  warm call: {(time.perf_counter() - started) * 1000:.0f} ms")

    job = slow_square.spawn(12)
    print(f"spawn(): job {job.job_id} is {job.status()}")
    print(f"  wait(): {job.wait()}, now {job.status()}")

    # What to type next, with the settings in force (temporal-dev.yaml, APOTHIC_TEMPORAL_ADDRESS).
    cli = apothic_command()
    settings = apothic.ControlPlaneClient().settings
    server = settings.server
    print("\nNext:")
    print(f"  the jobs of this run:          {cli} jobs list --app {app.name}")
    print(f"  what slow_square printed:      {cli} jobs logs {job.job_id}")
    if not settings.embedded:
        print(f"  every job's history:           the Web UI of {settings.address}, namespace {settings.namespace}")
        return  # nothing runs in the background here: `apothic stop` has nothing to stop
    if server.headless:
        print("  every job's history:           no Web UI (server.headless in temporal-dev.yaml)")
    else:
        ui = f"http://{server.ip}:{server.ui_port}/namespaces/{server.namespace}/workflows"
        print(f"  every job's history (Web UI):  {ui}")
    print(f"  stop the background server, worker and containers:  {cli} stop")


if __name__ == "__main__":
    main()
