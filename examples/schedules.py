"""Schedules: a function that runs every two seconds while the app is live.

    apothic run examples/schedules.py --ticks-wanted 2

The schedule exists while the run lasts; when the entrypoint returns, the run removes the app
and its schedule with it (`apothic deploy` keeps it). Each run of the schedule is a job that
writes a file to a volume, which the entrypoint reads.

Expected output:
    waiting for 2 ticks
    saw 2 ticks
"""

import time
from datetime import datetime, timezone

import apothic

app = apothic.App("example-schedules")
ticks = apothic.Volume.from_name("example-schedule-ticks", create_if_missing=True)


@app.function(schedule=apothic.Period(seconds=2), volumes={"/ticks": ticks}, timeout_s=30)
def tick() -> None:
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    with open(f"/ticks/{now}", "w") as f:
        f.write(now)
    print(f"tick at {now}")


@app.local_entrypoint()
def main(ticks_wanted: int = 2, timeout_s: float = 60.0) -> None:
    started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    print(f"waiting for {ticks_wanted} ticks")
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while len(seen) < ticks_wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = sorted(e.path.strip("/") for e in ticks.listdir("/") if e.path.strip("/") > started)
    print(f"saw {len(seen)} ticks")
    if len(seen) < ticks_wanted:
        raise SystemExit(f"the schedule ran {len(seen)} times in {timeout_s:g} s")
