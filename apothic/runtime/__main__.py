"""Entry point of a function container: ``python -m apothic.runtime``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import traceback
from datetime import timedelta

from .._control._config import load_settings
from ._executor import MainThreadExecutor
from ._runtime import Runtime, RuntimeConfig
from ._tasks import supervise, wanted_tasks


def main() -> None:
    tasks = wanted_tasks()
    if tasks > 1:  # tasks_per_container: this process starts the container's runtimes (never returns)
        supervise(tasks)
    config = RuntimeConfig.from_env()
    executor = MainThreadExecutor()
    runtime = Runtime(config, load_settings(), executor)

    def serve() -> None:
        try:
            asyncio.run(runtime.serve())
        except BaseException:  # noqa: BLE001 - report, then make the container exit
            traceback.print_exc()
            runtime.exit_code = runtime.exit_code or 1
        finally:
            executor.stop()
            if runtime.stuck:
                # The main thread is stuck in user code that ignored its interruption.
                _exit(config, runtime.exit_code)

    def on_term(signum: int, frame: object) -> None:
        runtime.request_shutdown(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    thread = threading.Thread(target=serve, name="apothic-runtime", daemon=True)
    thread.start()
    executor.serve_forever()
    thread.join(timeout=timedelta(minutes=5).total_seconds())
    _exit(config, runtime.exit_code)


def _exit(config: RuntimeConfig, code: int) -> None:
    """Exit with ``code``, first leaving it in the status file (a watcher that adopted this
    process after a control worker restart is not its parent and cannot wait for it)."""
    if config.status_file:
        try:
            with open(config.status_file, "w") as f:
                f.write(str(code))
        except OSError:
            pass
    # The last line of the container's output: hosts whose API only says "exited" (a rented
    # machine) read the exit code from the log.
    print(f"apothic-runtime: exit {code}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
