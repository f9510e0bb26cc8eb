"""Apothic quickstart: deploy an app, then call it with remote() and spawn().

    python examples/quickstart.py

With no APOTHIC_TEMPORAL_ADDRESS set, this starts the embedded Temporal dev server and a
control worker in the background (see `apothic stop`), deploys the app, and runs the calls in
function containers on this machine.
"""

import time

import apothic

app = apothic.App("quickstart")


@app.function(cpu=1, memory_mb=512, timeout_s=60)
def summarize(text: str) -> str:
    print(f"summarizing {len(text)} characters")
    return text[:40] + ("..." if len(text) > 40 else "")


@app.function(timeout_s=60, retries=apothic.Retries(max_retries=2, initial_delay=0.5))
def slow_square(x: int) -> int:
    time.sleep(1)
    return x * x


def main() -> None:
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
    print(f"  logs of the summarize call are kept too: `apothic jobs list --app {app.name}`")


if __name__ == "__main__":
    main()
